# vlmshield: `make install` sets up .venv on a fresh clone; `make test` runs the offline suite;
# `make demo` runs the main job on the embedded default; `make bench` prints performance numbers.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
# torch and torchvision install from this machine's disk; pin them so nothing pulls a larger build.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo bench clean world-weights

install: $(STAMP)

$(STAMP): pyproject.toml $(PLUGINS) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[test]' $(foreach p,$(dir $(PLUGINS)),-e '$(p)[test]')
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/vlmshield demo --out demo

# Re-run the world's pretraining recipe for every tiny architecture and copy the weights and cards into
# the package (what ships in src/vlmshield/world/weights). 7-19 minutes per model on 2 CPU cores.
WORLD_ARCHS := tinyvit8 tinyvit4 tinyrn
world-weights: install
	for arch in $(WORLD_ARCHS); do \
		$(VENV)/bin/vlmshield world pretrain $$arch --out runs/world-pretrain-$$arch --no-progress || exit 1; \
		cp runs/world-pretrain-$$arch/clip-$$arch.safetensors runs/world-pretrain-$$arch/clip-$$arch.json \
			src/vlmshield/world/weights/; \
	done

# The benchmarks compare with torchattacks and with AutoAttack's reference APGD (PyPI: pyautoattack).
# Both are installed without their declared dependencies: torchattacks pins requests~=2.25.1, which would
# downgrade what huggingface_hub needs, and pyautoattack only needs torch, which is here.
bench: install
	$(PIP) install --quiet --no-deps torchattacks==3.5.1 pyautoattack==0.2.0
	$(PIP) install --quiet scipy
	$(PY) bench/attack_overhead.py
	$(PY) bench/apgd_vs_autoattack.py
	$(PY) bench/world_generation.py
	$(PY) bench/world_pretrain.py
	$(PY) bench/ttc_cost.py
	$(PY) bench/cli_startup.py

clean:
	rm -rf $(VENV) .pytest_cache
