"""The fine-tuning engine: schedules, determinism and resume, declared parameters, distributed training."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from vlmshield.api import (
    VLM,
    ParameterError,
    Stage,
    TrainConfig,
    TrainingDefense,
    WeightsError,
    kl_divergence,
    learning_rate,
    temporary_host,
    training_progress,
)
from vlmshield.testing import TINY_CLIP, EmbeddingPull, logged_losses, tiny_vlm, toy_dataset


def test_kl_is_the_first_softmax_s_divergence_from_the_second_summed_over_classes():
    first, second = torch.randn(3, 5), torch.randn(3, 5)
    p, q = first.softmax(1), second.softmax(1)
    by_hand = (p * (p.log() - q.log())).sum(1)
    assert torch.allclose(kl_divergence(first, second), by_hand, atol=1e-6)
    assert torch.allclose(kl_divergence(first, second),
                          torch.nn.functional.kl_div(second.log_softmax(1), p, reduction="none").sum(1), atol=1e-6)
    assert kl_divergence(first, first).abs().max() < 1e-6 and (kl_divergence(first, second) > 0).all()


def _config(**overrides):
    fields = dict(stages=(Stage("a", steps=4, lr=1e-3, warmup=1, weight_decay=0.0),), batch_size=8, attack_steps=2,
                  checkpoint_every=2, log_every=1)
    return TrainConfig(**{**fields, **overrides})


def test_each_stage_warms_up_then_decays_to_zero():
    stage = Stage("s", steps=10, lr=1.0, warmup=2)
    assert [learning_rate(stage, i) for i in range(3)] == [0.5, 1.0, 1.0]
    assert learning_rate(stage, 9) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(7 / 8 * torch.pi)).item()))
    config = TrainConfig(stages=(Stage("first", steps=3), Stage("second", steps=2)))
    assert [config.stage_at(i)[0].name for i in range(5)] == ["first"] * 3 + ["second"] * 2
    assert config.stage_at(3)[1] == 0 and config.total_steps == 5


@pytest.mark.parametrize("kwargs, fragment", [
    ({"stages": ()}, "at least one stage"),
    ({"stages": (Stage(steps=0),)}, "steps must be a whole number"),
    ({"stages": (Stage(steps=5, warmup=6),)}, "warm-up within"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"eps": "4/0"}, "eps"),
    ({"optimizer": "adam"}, "optimizer must be one of adamw, sgd"),
])
def test_bad_configurations_are_one_sentence(kwargs, fragment):
    with pytest.raises(ParameterError, match=fragment):
        TrainConfig(**kwargs).check()


def test_only_the_declared_parameters_train_and_the_reference_stays_frozen():
    with temporary_host():
        vlm = tiny_vlm()
        before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
        method = EmbeddingPull()
        method.fit(vlm, toy_dataset(), _config(), progress=False)
    after = vlm.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("visual.") for k in changed)
    assert all(p.requires_grad for p in vlm.parameters())  # restored as they were


def test_fixed_sin_cos_positions_are_a_buffer_that_never_trains():
    # open_clip keeps them as a parameter that does not require gradients; the engine would train it
    config = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "pos_embed_type": "sin_cos_2d"}}
    torch.manual_seed(0)
    vlm = VLM.from_config(config).eval()
    positions = vlm.model.visual.positional_embedding
    assert "visual.positional_embedding" in vlm.model.state_dict()
    assert all(p is not positions for p in vlm.parameters())
    before, patches = positions.clone(), vlm.model.visual.conv1.weight.detach().clone()
    with temporary_host():
        EmbeddingPull().fit(vlm, toy_dataset(), _config(), progress=False)
    assert not torch.equal(vlm.model.visual.conv1.weight, patches)  # the tower trained, its positions did not
    assert torch.equal(vlm.model.visual.positional_embedding, before)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    with temporary_host():
        whole = EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), progress=False)
        EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False, stop_after=3)
        assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["step"] == 3
        first_part = training_progress(tmp_path)["elapsed_s"]
        resumed = EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False)
    assert 0 < first_part < training_progress(tmp_path)["elapsed_s"]  # the training time counts every part of the run
    assert training_progress(tmp_path)["resumes"] == 1
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_checkpoint_of_another_run_or_a_broken_one_is_refused(tmp_path):
    with temporary_host():
        EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False, stop_after=2)
        with pytest.raises(ParameterError, match="another configuration"):
            EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(seed=1), out=tmp_path, progress=False)
        # the same run written by another version of the model (one more parameter, e.g. learnt positions)
        state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        state["optimizer"]["param_groups"][0]["params"].append(10 ** 6)
        torch.save(state, tmp_path / "checkpoint.pt")
        with pytest.raises(WeightsError, match="optimizer of another version of the model"):
            EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False)
        (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
        with pytest.raises(WeightsError, match="unreadable"):
            EmbeddingPull().fit(tiny_vlm(), toy_dataset(), _config(), out=tmp_path, progress=False)


def test_stages_set_their_own_learning_rate(tmp_path):
    config = _config(stages=(Stage("warm", steps=2, lr=1e-3, warmup=0, weight_decay=0.0),
                             Stage("main", steps=2, lr=1e-2, warmup=2, weight_decay=0.1)))
    with temporary_host():
        EmbeddingPull().fit(tiny_vlm(), toy_dataset(), config, out=tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in log] == ["warm", "warm", "main", "main"]
    assert [e["lr"] for e in log] == pytest.approx([1e-3, 5e-4, 5e-3, 1e-2])


def test_the_inner_attack_raises_and_the_outer_steps_lower_the_method_loss():
    with temporary_host():
        vlm, method, data = tiny_vlm(), EmbeddingPull(), toy_dataset()
        x = torch.stack([data[i][0] for i in range(8)])
        refs = method.references(vlm, data)
        target = refs["original"](x)
        from vlmshield.api import inner_attack

        x_adv = inner_attack(_config(attack_steps=5))(vlm, x, target, seed=0)
        with torch.no_grad():
            assert method.loss(vlm, x_adv, x, None, target, refs) > method.loss(vlm, x, x, None, target, refs)
        losses = logged_losses(vlm, data, method, steps=12, attack_steps=2)
    assert losses[-1] < losses[0]


SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from vlmshield.api import Stage, TrainConfig
    from vlmshield.api import init_from_env, rank_and_world
    sys.path.insert(0, sys.argv[2])
    from test_train import EmbeddingPull
    from vlmshield.testing import tiny_vlm, toy_dataset
    init_from_env()
    config = TrainConfig(stages=(Stage("a", steps=3, lr=1e-3, warmup=1, weight_decay=0.01),), batch_size=8,
                         attack_steps=2, attack_params={"random_start": False})
    vlm = EmbeddingPull().fit(tiny_vlm(), toy_dataset(), config, progress=False, device="cpu")
    if rank_and_world()[0] == 0:
        torch.save(vlm.model.visual.state_dict(), sys.argv[1])
''')


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one_with_the_whole_batch(tmp_path):
    """The attack starts without random noise here: its random start is drawn per process."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    tests = str(__import__("pathlib").Path(__file__).parent)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for name, prefix in (("one", [sys.executable]), ("two", torchrun)):
        done = subprocess.run([*prefix, str(script), str(tmp_path / f"{name}.pt"), tests], capture_output=True,
                              text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for key in one:
        if key.endswith("attn.in_proj_bias"):
            # The key bias has no effect on attention (softmax ignores a shift shared by all keys): its gradient
            # is rounding noise, which Adam's normalisation turns into full-size steps, different in each run.
            width = one[key].numel() // 3
            torch.testing.assert_close(two[key][:width], one[key][:width], rtol=1e-4, atol=1e-6, msg=key)
            torch.testing.assert_close(two[key][2 * width:], one[key][2 * width:], rtol=1e-4, atol=1e-6, msg=key)
        else:
            torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    assert any(not torch.equal(one[k], tiny_vlm().model.visual.state_dict()[k]) for k in one)


def test_a_stage_can_fall_linearly_from_lr_start_or_decay_to_lr_end():
    falling = Stage("fall", steps=4, lr=3e-6, lr_start=3e-5, warmup=0)
    assert [learning_rate(falling, i) for i in range(4)] == pytest.approx([3e-5, 2.325e-5, 1.65e-5, 9.75e-6])
    floor = Stage("cosine", steps=5, lr=3e-6, lr_end=1e-9, warmup=0)
    assert learning_rate(floor, 0) == pytest.approx(3e-6) and learning_rate(floor, 5) == pytest.approx(1e-9)
    with pytest.raises(ParameterError, match="lr_end must be in"):
        Stage("x", steps=2, lr=1e-5, lr_end=1e-4, warmup=0).check()


def test_an_inverse_stage_anneals_as_dann_does_and_nesterov_is_sgds():
    stage = Stage("inverse", steps=10_000, lr=0.005, warmup=0, schedule="inverse")
    assert learning_rate(stage, 0) == 0.005
    assert learning_rate(stage, 1000) == pytest.approx(0.005 * 2 ** -0.75)
    assert learning_rate(stage, 9999) == pytest.approx(0.005 * (1 + 0.001 * 9999) ** -0.75)
    with pytest.raises(ParameterError, match="schedule must be one of cosine, inverse; got 'step'"):
        Stage("x", steps=2, schedule="step", warmup=0).check()
    with pytest.raises(ParameterError, match="nesterov is SGD's momentum; the optimizer is adamw"):
        TrainConfig(nesterov=True).check()


def test_a_methods_learning_rate_scales_split_the_groups_and_follow_the_schedule(tmp_path):
    from vlmshield.engine.training import OPTIMIZERS, Batches, parameter_groups, run_training

    backbone, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    model = torch.nn.Sequential(backbone, head)
    scales = {id(p): 0.1 for p in backbone.parameters()}
    stage = Stage("s", steps=3, lr=0.2, warmup=0, weight_decay=1e-3, schedule="inverse", decay_rate=0.5)
    config = TrainConfig(stages=(stage,), optimizer="sgd", nesterov=True, batch_size=2, log_every=1)
    groups = parameter_groups(list(model.parameters()), [head.bias], scales)
    assert [(len(g["params"]), g.get("lr_scale", 1.0), g.get("no_decay", False)) for g in groups] == \
        [(2, 0.1, False), (1, 1.0, False), (1, 1.0, True)]
    assert OPTIMIZERS["sgd"](groups, stage, config).param_groups[0]["nesterov"] is True

    class Scaled(TrainingDefense):
        name, trainer = "scaled", "adversarial"

        def lr_scales(self, model):
            return scales

    def step_loss(step, items, refs):
        return model(torch.stack([x for x, in items])).pow(2).mean()

    run_training(model, Scaled(), config, batches=Batches([(torch.ones(2),)] * 4, 2, 0), step_loss=step_loss,
                 refs={}, parameters=list(model.parameters()), out=tmp_path)
    rates = [0.2 * (1 + 0.5 * t) ** -0.75 for t in range(3)]
    logged = [json.loads(line)["lr"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(rates)  # the stage's rate
    groups = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1 * rates[-1], rates[-1]])
    assert all(g["nesterov"] for g in groups)


def test_parameters_in_no_decay_are_spared_the_weight_decay_and_betas_reach_adamw():
    from vlmshield.engine.training import OPTIMIZERS, parameter_groups

    decayed, spared = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    stage = Stage("s", steps=1, lr=0.1, warmup=0, weight_decay=0.5)
    optimizer = OPTIMIZERS["adamw"](parameter_groups([decayed, spared], [spared]), stage,
                                    TrainConfig(stages=(stage,), betas=(0.9, 0.98)))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.5, 0.0]
    assert all(g["betas"] == (0.9, 0.98) for g in optimizer.param_groups)
    decayed.grad, spared.grad = torch.zeros(2, 2), torch.zeros(2)
    optimizer.step()  # no gradient: only the decay moves a weight
    assert torch.allclose(decayed, torch.full((2, 2), 1 - 0.1 * 0.5)) and torch.equal(spared, torch.ones(2))
