"""The engines, built on the contract (``vlmshield.core``) and on nothing else of vlmshield's: evaluation
(``evaluation``), protocol runs (``protocol_runs``), the training loop every trainer runs (``training``),
reports and leaderboards (``reports``, ``leaderboard``), run records (``records``), sanity flags (``sanity``)
and torch.distributed (``distributed``). Plugins reach them through ``vlmshield.api``."""
