"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019), generated on the fly.

Why on the fly: the released ImageNet-C is 15 x 5 x 50,000 JPEGs; generating a corrupted view from the
clean validation image at evaluation time needs no extra download and lets any image folder be
evaluated under the same shifts. The pixel code is the PyPI package ``imagecorruptions`` (1.1.2), a
packaging of the original generator with the same severity constants; this module only adapts it:

* :func:`imagenet_c_view` reproduces the preprocessing of the released files (short side 256,
  centre crop 224), :func:`corrupt` applies one corruption, and :func:`as_released_jpeg` does the
  quality-85 JPEG round trip that the released files went through.
* ``imagecorruptions`` draws its randomness from numpy's *global* RNG. :func:`corrupt` seeds that
  RNG from the caller's seed for the duration of one call and puts the previous state back
  afterwards, so a result depends only on (image, name, severity, seed) and nothing leaks into, or
  in from, other code using ``np.random``.

Compatibility layer (see :func:`_backend`). ``imagecorruptions`` 1.1.2 predates current releases
of its dependencies; three things break, and each is fixed *inside this process, on that package's
module only*, without editing site-packages:

1. ``from pkg_resources import resource_filename`` at import time: ``pkg_resources`` is gone from
   setuptools >= 81 (and setuptools is not even guaranteed in a venv). While importing, and only if
   no ``pkg_resources`` is loaded already, a stub module providing ``resource_filename`` is put in
   ``sys.modules`` and removed again right after, so later ``import pkg_resources`` behaves as
   before. The package's ``resource_filename`` is then replaced by one built on
   ``importlib.resources`` (it only locates the frost overlay images shipped in the package).
2. ``skimage.filters.gaussian(..., multichannel=True)``: the argument was removed in
   scikit-image 0.19+; the package's ``gaussian`` name is rebound to a wrapper that maps
   ``multichannel=True`` to ``channel_axis=-1``.
3. ``np.float_`` (used by the plasma fractal of ``fog``): removed in numpy 2. The package's ``np``
   name is rebound to a proxy of numpy that adds ``float_ = float64`` and forwards everything else;
   the real numpy module is not touched.

One more adaptation, for determinism rather than compatibility: ``impulse_noise`` calls
``skimage.util.random_noise``, which since scikit-image 0.21 draws from a fresh, unseeded
``np.random.default_rng()`` instead of the global RNG. The package's ``sk`` name is rebound to a
proxy whose ``util.random_noise`` takes its ``rng`` seed from the (seeded) global numpy RNG.

Nothing else global is changed. The heavy imports (scikit-image, scipy, OpenCV) happen on the
first :func:`corrupt` call, not when this module is imported.
"""

from __future__ import annotations

import functools
import io
import sys
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from harness.errors import HarnessError

CORRUPTIONS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "defocus_blur",
    "elastic_transform",
    "fog",
    "frost",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "shot_noise",
    "snow",
    "zoom_blur",
)
"""The 15 corruptions in the order of the paper's Table 2 (alphabetical), the order results are reported in."""

CANONICAL_ORDER: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The same 15 in the ImageNet-C generator's (and ``imagecorruptions``') order: noise, blur, weather, digital.
The four held-out validation corruptions (speckle_noise, gaussian_blur, spatter, saturate) are not included."""

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""ImageNet-C severity levels."""

RESIZE_TO: int = 256
CROP_TO: int = 224
RELEASED_JPEG_QUALITY: int = 85

_RNG_LOCK = threading.Lock()
"""Serialises the seed / corrupt / restore sequence on numpy's global RNG between threads of one process."""


# --------------------------------------------------------------------------- compatibility layer


def _resource_filename(module_name: str, resource: str) -> str:
    """``pkg_resources.resource_filename`` for a module installed as plain files (which pip does).

    As in pkg_resources, the resource path is relative to the directory of the named module (the package
    passes its own ``__name__``, a module, so ``importlib.resources.files`` would not accept it).
    """
    import importlib
    import os

    module = importlib.import_module(module_name)
    return os.path.join(os.path.dirname(os.path.abspath(module.__file__ or "")), os.path.normpath(resource))


class _NumpyCompat(types.ModuleType):
    """numpy as ``imagecorruptions`` expects it: numpy 1's ``np.float_`` alias, everything else forwarded."""

    float_ = np.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _gaussian_compat(gaussian: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap scikit-image's ``gaussian`` to accept the removed ``multichannel=`` (True -> channel_axis=-1)."""

    @functools.wraps(gaussian)
    def wrapped(image: np.ndarray, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> np.ndarray:
        if multichannel is not None:
            kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return gaussian(image, *args, **kwargs)

    return wrapped


def _skimage_compat(sk: types.ModuleType) -> types.ModuleType:
    """A view of ``skimage`` whose ``util.random_noise`` draws its seed from numpy's global RNG.

    scikit-image >= 0.21 seeds ``random_noise`` from ``rng=None`` -> fresh OS entropy, which would make
    impulse_noise non-reproducible however the global RNG is seeded. Older releases used the global RNG
    directly, as ImageNet-C did; taking the seed from it restores per-seed determinism.
    """
    import inspect

    random_noise = sk.util.random_noise
    params = inspect.signature(random_noise).parameters
    seed_kw = "rng" if "rng" in params else "seed" if "seed" in params else None

    def seeded_random_noise(image: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        if seed_kw is not None and kwargs.get(seed_kw) is None:
            kwargs[seed_kw] = int(np.random.randint(0, 2**31 - 1))
        return random_noise(image, *args, **kwargs)

    class _Util(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(sk.util, name)

    class _Skimage(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(sk, name)

    util = _Util("skimage.util (apm-bench view)")
    util.random_noise = seeded_random_noise  # type: ignore[attr-defined]
    view = _Skimage("skimage (apm-bench view)")
    view.util = util  # type: ignore[attr-defined]
    return view


@functools.cache
def _backend() -> dict[str, Callable[[Image.Image, int], Any]]:
    """Import ``imagecorruptions`` with the fixes above applied; name -> corruption function (the 15 only)."""
    stub_installed = False
    if "pkg_resources" not in sys.modules:
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = _resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stub
        stub_installed = True
    try:
        with warnings.catch_warnings():
            # `from scipy.ndimage.interpolation import ...` in the package: deprecated namespace, still works.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            import imagecorruptions.corruptions as ic
    except ImportError as exc:
        hint = ""
        if "libGL" in str(exc) or "libgthread" in str(exc):
            hint = (
                " (OpenCV from opencv-python needs the system's libGL: `apt-get install libgl1`,"
                " or replace it with opencv-python-headless)"
            )
        raise HarnessError(f"cannot import imagecorruptions: {exc}{hint}") from exc
    finally:
        if stub_installed and sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]

    from skimage.filters import gaussian

    ic.resource_filename = _resource_filename  # type: ignore[attr-defined]
    ic.gaussian = _gaussian_compat(gaussian)  # type: ignore[attr-defined]
    ic.np = _NumpyCompat("numpy (apm-bench view)")  # type: ignore[attr-defined]
    ic.sk = _skimage_compat(ic.sk)  # type: ignore[attr-defined]
    return {name: getattr(ic, name) for name in CANONICAL_ORDER}


# --------------------------------------------------------------------------- public API


def imagenet_c_view(image: Image.Image) -> Image.Image:
    """The clean image as ImageNet-C's generator saw it: RGB, short side resized to 256, centre crop 224.

    Matches ``torchvision.transforms.Compose([Resize(256), CenterCrop(224)])`` on a PIL image, which the
    original ``make_imagenet_c.py`` used: bilinear resize, long side ``int(256 * long / short)``, crop
    offsets ``int(round((size - 224) / 2))``. Corrupting this view (then :func:`as_released_jpeg`) gives
    images comparable to the released files.
    """
    image = image.convert("RGB")
    w, h = image.size
    if w <= h:
        new_w, new_h = RESIZE_TO, int(RESIZE_TO * h / w)
    else:
        new_w, new_h = int(RESIZE_TO * w / h), RESIZE_TO
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left = int(round((new_w - CROP_TO) / 2.0))
    top = int(round((new_h - CROP_TO) / 2.0))
    return image.crop((left, top, left + CROP_TO, top + CROP_TO))


def _seed_global_rng(seed: int) -> None:
    """Seed numpy's legacy global RNG: with ``seed`` itself below 2**32, else with its 32-bit words.

    Per-sample seeds from :func:`harness.seeding.derive_seed` are 63-bit, which ``np.random.seed`` rejects
    as a plain int; the word array keeps every bit.
    """
    if seed < 2**32:
        np.random.seed(seed)
    else:
        words = []
        while seed:
            words.append(seed & 0xFFFFFFFF)
            seed >>= 32
        np.random.seed(np.array(words, dtype=np.uint32))


def corrupt(image: Image.Image, name: str, severity: int, seed: int) -> Image.Image:
    """Apply ImageNet-C corruption ``name`` at ``severity`` (1-5) to ``image``; deterministic given ``seed``.

    The result is an RGB uint8 image of the input's size (converted to RGB first; at least 32x32). Like
    the original generator, the float output is truncated with ``np.uint8`` (not rounded). numpy's
    global RNG is seeded from ``seed`` for the call and restored afterwards, so results do not depend on
    what ran before and nothing after sees a changed RNG. Unknown names or severities raise
    :class:`HarnessError` naming the bad value and the choices.
    """
    if name not in CORRUPTIONS:
        raise HarnessError(f"unknown corruption {name!r}; choose one of: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise HarnessError(f"bad corruption severity {severity!r}; choose one of: 1, 2, 3, 4, 5")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HarnessError(f"bad corruption seed {seed!r}; it must be a non-negative integer")
    rgb = image.convert("RGB")
    if min(rgb.size) < 32:
        raise HarnessError(f"image of size {rgb.size[0]}x{rgb.size[1]} is too small to corrupt; both sides must be >= 32")
    fn = _backend()[name]
    with _RNG_LOCK:
        saved = np.random.get_state()
        try:
            _seed_global_rng(int(seed))
            out = fn(rgb, int(severity))
        finally:
            np.random.set_state(saved)
    arr = np.uint8(out) if not isinstance(out, Image.Image) else np.asarray(out.convert("RGB"))
    if arr.shape != (rgb.size[1], rgb.size[0], 3):
        raise HarnessError(f"corruption {name!r} returned shape {arr.shape} for a {rgb.size[0]}x{rgb.size[1]} image")
    return Image.fromarray(np.ascontiguousarray(arr))


def corrupt_sample(image: Image.Image, family: str, name: str, severity: int, sample_id: str) -> Image.Image:
    """A task's corrupted view of one sample, seeded by (family, corruption, severity, sample id)
    only: every run, worker and resume sees the same pixels, whatever the run seed."""
    from harness.seeding import derive_seed

    return corrupt(image, name, severity, derive_seed(0, family, name, str(severity), sample_id))


def released_jpeg_bytes(image: Image.Image, quality: int = RELEASED_JPEG_QUALITY) -> bytes:
    """The JPEG file (quality 85 by default) every released ImageNet-C image was saved as. Returned as
    bytes so that `apm-bench imagenet-c build` writes exactly what a generated task decodes."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise HarnessError(f"bad JPEG quality {quality!r}; choose an integer from 1 to 100")
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def as_released_jpeg(image: Image.Image, quality: int = RELEASED_JPEG_QUALITY) -> Image.Image:
    """JPEG round trip at ``quality`` (85 by default), as every released ImageNet-C file was saved.

    Scores on generated corruptions are closest to the released benchmark when this compression is
    applied too; it is separate from :func:`corrupt` so that it can be switched off.
    """
    with Image.open(io.BytesIO(released_jpeg_bytes(image, quality))) as decoded:
        return decoded.convert("RGB")
