"""Is the Hugging Face hub there, and what does its cache already hold: asked before weights are fetched,
so that a machine without network hears so in seconds, in one line, instead of after huggingface_hub's
retries (about a minute of messages on the first contact offline), and so that `apm-bench plan` can
say whether a run's weights will be found without fetching them.

HF_HUB_OFFLINE=1 is honoured as huggingface_hub honours it: the cache answers at once and nothing is
probed. HF_ENDPOINT (a mirror) is what is probed, and proxies set in the environment are used."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

PROBE_SECONDS = 3.0
"""How long the hub may take to answer at all (any HTTP status counts as an answer)."""
OFFLINE_ENV = "HF_HUB_OFFLINE"
ENDPOINT_ENV = "HF_ENDPOINT"


def offline() -> bool:
    """HF_HUB_OFFLINE set as huggingface_hub reads it (1, ON, YES, TRUE)."""
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or "https://huggingface.co").rstrip("/")


def host(url: str) -> str:
    return urlsplit(url).netloc or url


def unreachable(url: str) -> str | None:
    """None when the server of `url` answers within PROBE_SECONDS; otherwise why not, in a few words.
    Asked once per server and process."""
    parts = urlsplit(url)
    return _probe(f"{parts.scheme}://{parts.netloc}/")


@cache
def _probe(root: str) -> str | None:
    """A HEAD request in a daemon thread, waited for at most PROBE_SECONDS: the socket timeout does not
    bound a name lookup, which can hang far longer where no DNS server answers."""
    answer: list[str | None] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(root, method="HEAD"), timeout=PROBE_SECONDS).close()
            answer.append(None)
        except urllib.error.HTTPError:
            answer.append(None)  # an error status is still an answer: the server is there
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            answer.append(str(getattr(reason, "strerror", None) or reason) or type(exc).__name__)

    thread = threading.Thread(target=ask, name="apm-bench-hub-probe", daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return answer[0] if answer else f"no answer within {PROBE_SECONDS:g} s"


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_file(repo: str, filenames: Sequence[str]) -> Path | None:
    """The first of `filenames` of model `repo` at its cached `main`, without the network."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return Path(found)
    return None


def cached_snapshot(repo: str, patterns: Sequence[str]) -> Path | None:
    """The cached snapshot folder of model `repo` at `main` holding files that match `patterns`."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, allow_patterns=list(patterns), local_files_only=True))
    except Exception:  # not cached (huggingface_hub raises its own kinds): nothing to use
        return None
    return folder if any(p.is_file() for pattern in patterns for p in folder.glob(pattern)) else None
