# Two commands from a clean clone: `make demo` and `make test`.
# Both create .venv when missing, install everything (exact torch pins live here only),
# fetch the data, then run.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test install data bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installed marker: reinstalls when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q $(TORCH_PINS) -e ".[test,ray]"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST: Debian's package when apt is there, else torchvision downloads it on first use.
data:
	@if [ -f $(FMNIST_DIR)/t10k-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update >/dev/null && apt-get install -y dataset-fashion-mnist >/dev/null)) && \
	  echo "Fashion-MNIST installed in $(FMNIST_DIR)"; \
	else \
	  echo "No Debian package manager: torchvision will download Fashion-MNIST on first use"; \
	fi

demo: install data
	$(BIN)/headstrong demo

test: install data
	$(BIN)/python -m pytest -q

bench: install data
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
