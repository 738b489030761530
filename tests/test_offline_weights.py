"""A machine without network, first contact: weights from a tag or the hub stop a run with one line in
seconds (huggingface_hub alone retries for about a minute), or come from the cache when it holds them.
The hub is simulated by HF_ENDPOINT at a local port: nothing here reaches the internet."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from harness.models import hub

EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_hub(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
            "HF_HUB_CACHE": str(tmp_path / "hub")}


def test_an_unreachable_hub_stops_the_run_with_one_line(tmp_path):
    port = closed_port()
    done = subprocess.run([EXE, "run", "--task", "synthetic:1", "--method", "zeroshot", "--model", "ViT-B-16",
                           "--pretrained", "openai", "--no-progress"], cwd=tmp_path, env=no_hub(tmp_path, port),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no retry messages, no estimate: the weights come first
    assert lines[0].startswith(f"error: cannot fetch the weights of ViT-B-16 openai: 127.0.0.1:{port} is unreachable (")
    assert f"and they are not in the cache ({tmp_path / 'hub'}); give local weights instead" in lines[0]
    assert "HF_HUB_OFFLINE=1" in lines[0] and not (tmp_path / "results").exists()


def test_a_hub_that_never_answers_is_given_up_on_after_a_few_seconds():
    with socket.socket() as silent:  # accepts the connection (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        why = hub.unreachable(f"http://127.0.0.1:{silent.getsockname()[1]}/some/file")
    assert why is not None


def test_the_cache_serves_when_the_hub_does_not_answer(tmp_path):
    repo = tmp_path / "hub" / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "open_clip_model.safetensors").write_bytes(b"weights")
    code = (
        "import hashlib, os; from harness.models.sources import resolve_source, weights_path, weights_sha256, weights_status;"
        "source = resolve_source('ViT-B-16', 'openai'); print(weights_status(source));"
        "print(weights_path(source).name, os.environ.get('HF_HUB_OFFLINE'));"
        "print(weights_sha256(source) == hashlib.sha256(b'weights').hexdigest())"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=no_hub(tmp_path, closed_port()),
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["(True, 'in the cache')",
                                        "open_clip_model.safetensors 1",  # and the workers it starts use the cache
                                        "True"], done.stderr
