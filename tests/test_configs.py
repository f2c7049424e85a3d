"""Every recipe in configs/ parses and passes train_softmax's flag validation."""
import glob
import os

import pytest
from absl import flags

from tfface import train_softmax
from tfface.training import read_schedule_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


@pytest.fixture
def parsed_flags(monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name their schedule files relative to the project root
    yield flags.FLAGS
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("recipe", [os.path.basename(r) for r in RECIPES])
def test_recipe_is_valid(recipe, parsed_flags, tmp_path):
    # The datasets a recipe names are not here: point data_dir at a stand-in, drop lfw_dir.
    parsed_flags(["train_softmax", f"--flagfile=configs/{recipe}", f"--data_dir={tmp_path}", "--lfw_dir="])
    train_softmax._validate_flags()
    kwargs = train_softmax.parse_kwargs(parsed_flags.head_kwargs, "head_kwargs")
    train_softmax.get_head(parsed_flags.head, 3, **kwargs)  # the head accepts its options
    if parsed_flags.learning_rate_schedule_file:
        assert read_schedule_file(parsed_flags.learning_rate_schedule_file)


def test_recipes_exist():
    names = {os.path.basename(r) for r in RECIPES}
    assert "quickstart.flags" in names and len(names) >= 6
