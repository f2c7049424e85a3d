"""Every recipe in configs/ parses and passes train_softmax's flag validation.

Checked in one subprocess: absl flags are process-global, and other test modules define
CLI flags of the same names in this process.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(os.path.basename(r) for r in glob.glob(os.path.join(ROOT, "configs", "*.flags")))

_CHECK = r"""
import json, sys
from absl import flags
from tfface import train_softmax, train_tripletloss  # noqa: F401  (defines the triplet flags)
from tfface.training import read_schedule_file
results = {}
for recipe in sys.argv[2:]:
    try:
        # The datasets a recipe names are not here: point data_dir at a stand-in, drop lfw_dir.
        flags.FLAGS(["train_softmax", f"--flagfile=configs/{recipe}", f"--data_dir={sys.argv[1]}", "--lfw_dir="])
        train_softmax._validate_flags()
        kwargs = train_softmax.parse_kwargs(flags.FLAGS.head_kwargs, "head_kwargs")
        train_softmax.get_head(flags.FLAGS.head, 3, **kwargs)  # the head accepts its options
        if flags.FLAGS.learning_rate_schedule_file:
            read_schedule_file(flags.FLAGS.learning_rate_schedule_file)
        results[recipe] = "ok"
    except Exception as err:
        results[recipe] = f"{type(err).__name__}: {err}"
    flags.FLAGS.unparse_flags()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK, str(tmp_path_factory.mktemp("data")), *RECIPES],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_is_valid(recipe, results):
    assert results[recipe] == "ok"


def test_recipes_exist():
    assert "quickstart.flags" in RECIPES and len(RECIPES) >= 6
