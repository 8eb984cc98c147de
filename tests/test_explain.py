"""Explanations of TEMA's recommendations, on data whose right explanation is known."""

import json
import subprocess
import sys

import pytest

from recbole_tema.errors import ConfigurationError
from recbole_tema.explain import Explainer
from recbole_tema.explain import main as explain_main
from recbole_tema.quick_start import run
from support.configs import small_model_config
from support.datasets import write_driver_dataset


def _train(root, model="TEMA", **overrides):
    data_path, drivers = write_driver_dataset(root, "drv")
    config = small_model_config(data_path, **{"epochs": 25, "stopping_step": 100, "learning_rate": 0.005,
                                              "MAX_ITEM_LIST_LENGTH": 20, **overrides})
    result = run(model=model, dataset="drv", config_dict=config)
    return result["saved_model_file"], drivers


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # RecBole writes log/ and saved/ into the working directory
        model_file, drivers = _train(root)
        yield Explainer(model_file), drivers


def test_names_the_deciding_history_item_and_tag_first(trained):
    explainer, drivers = trained
    users = sorted(drivers)[:40]
    named_item = named_tag = 0
    for user in users:
        driver, tag = drivers[user]
        top = explainer.explain(user, domain="a", k=1)["recommendations"]["a"][0]
        first = top["drivers"][0]
        assert top["domain"] == "a" and [t["tag"] for t in top["tags"]] == [tag]  # a group-g3 item, tagged g3
        named_item += first["item"] == driver and first["position"] == 9
        named_tag += first["shared_tags"][:1] == [tag]
    # A model that learned the rule puts the driver first for (nearly) every user; by chance: ~1 in 11.
    assert named_item >= 0.9 * len(users), f"driver named first for {named_item} of {len(users)} users"
    assert named_tag >= 0.9 * len(users), f"tag named first for {named_tag} of {len(users)} users"


def test_shares_sum_to_one_and_parts_are_exact(trained):
    explainer, drivers = trained
    user = sorted(drivers)[0]
    history = len(explainer.explain(user, k=1)["history"])
    explanation = explainer.explain(user, k=3, drivers=history)
    for domain, items in explanation["recommendations"].items():
        assert [item["rank"] for item in items] == [1, 2, 3] and all(item["domain"] == domain for item in items)
        for item in items:
            shares = [driver["share"] for driver in item["drivers"]]
            assert len(shares) == history and sum(shares) == pytest.approx(1.0, abs=1e-5)
            assert all(share >= 0 for share in shares)
            # The user-state terms add up to the score exactly: the gate decomposition is not an estimate.
            assert sum(item["user_state"]["terms"].values()) == pytest.approx(item["score"], rel=1e-4, abs=1e-4)
            assert sum(item["modalities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert sum(tag["weight"] for tag in item["tags"]) == pytest.approx(1.0, abs=1e-5)
            assert item["item"] not in {entry["item"] for entry in explanation["history"]}  # nothing already had


def test_formats_and_clear_errors(trained, capsys):
    explainer, drivers = trained
    user = sorted(drivers)[0]
    with pytest.raises(ConfigurationError, match=r"User \[nobody\] is not in dataset \[drv\]"):
        explainer.explain("nobody")
    with pytest.raises(ConfigurationError, match=r"Domain \[c\] is not a domain .* \['a', 'b'\]"):
        explainer.explain(user, domain="c")
    checkpoint = explainer.model_file
    assert explain_main(["--model-file", checkpoint, "--user", user, "--format", "json", "--k", "2"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert set(parsed["recommendations"]) == {"a", "b"} and len(parsed["recommendations"]["a"]) == 2
    assert explain_main(["--model-file", checkpoint, "--user", user, "--domain", "a"]) == 0
    text = capsys.readouterr().out
    assert f"User {user}" in text and "driven by:" in text and "Top 10 in domain a:" in text
    assert explain_main(["--model-file", checkpoint, "--user", user, "--format", "markdown"]) == 0
    assert "| # | item | score |" in capsys.readouterr().out
    assert explain_main(["--model-file", "no/such.pth", "--user", user]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_checkpoint_without_tags_still_explains(tmp_path):
    model_file, drivers = _train(tmp_path, use_tags=False, epochs=2)
    explanation = Explainer(model_file).explain(sorted(drivers)[0], k=2)
    assert not explanation["has_tags"]
    for items in explanation["recommendations"].values():
        assert all(item["tags"] == [] and item["drivers"] and item["modalities"] == {"id": 1.0} for item in items)


def test_other_models_are_refused(tmp_path):
    model_file, drivers = _train(tmp_path, model="LLMEMF", epochs=1)
    with pytest.raises(ConfigurationError, match="is a LLMEMF checkpoint: explanations are for TEMA"):
        Explainer(model_file)


def test_explains_from_a_fresh_process(trained):
    # A process that only reloads a checkpoint never builds a Config: RecBole's numpy aliases must
    # still be there (compat), or loading the dataset fails with `np.float`.
    explainer, drivers = trained
    user = sorted(drivers)[0]
    done = subprocess.run([sys.executable, "-m", "recbole_tema.explain", "--model-file", explainer.model_file,
                           "--user", user, "--format", "json", "--k", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["user"] == user


def test_an_additive_checkpoint_explains_exactly(tmp_path):
    """With modality_fusion / state_fusion: sum the parts still add up to the score, and no gate is shown."""
    model_file, drivers = _train(tmp_path, epochs=2, modality_fusion="sum", state_fusion="sum")
    explanation = Explainer(model_file).explain(sorted(drivers)[0], k=2)
    for items in explanation["recommendations"].values():
        for item in items:
            assert sum(item["user_state"]["terms"].values()) == pytest.approx(item["score"], rel=1e-4, abs=1e-4)
            assert item["user_state"]["mean_gate"] is None
            assert sum(item["modalities"].values()) == pytest.approx(1.0, abs=1e-5) and item["modalities"]["tags"] > 0
