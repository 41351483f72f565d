"""labkit.predict: ask / reveal, scoring, the static fallback and the contracts."""
import pytest

from labkit.contracts import ContractError
from labkit.predict import Question, ask, reveal

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_choice_question_headless_reveal_is_deterministic(capsys):
    q = ask("02.rare_error", "Larger or smaller?", choices=["larger", "smaller", "no detectable difference"])
    assert isinstance(q, Question) and q.answer is None
    out = reveal(q, "smaller")
    line = capsys.readouterr().out.strip()
    assert line == "PREDICTION 02.rare_error: measured smaller; your prediction: none committed"
    assert out["answer"] is None and "correct" not in out


def test_commit_button_stores_and_reveal_scores_a_choice(capsys):
    q = ask("02.x", "Which?", choices=["a", "b"])
    q.control.value = "b"
    q.button.click()
    assert q.answer == "b" and "committed" in q.status.value
    assert reveal(q, "b")["correct"] is True
    assert reveal(q, "a")["correct"] is False
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["PREDICTION 02.x: measured b; your prediction: b (right)",
                     "PREDICTION 02.x: measured a; your prediction: b (wrong)"]


def test_commit_without_a_choice_asks_for_one():
    q = ask("02.y", "Which?", choices=["a", "b"])
    q.button.click()
    assert q.answer is None and "choose" in q.status.value


def test_number_question_scores_absolute_and_relative_error(capsys):
    q = ask("03.gap", "How large?", number=(0, 2, 0.1))
    q.control.value = 1.5
    q.button.click()
    r = reveal(q, 1.2)
    assert r["abs_error"] == pytest.approx(0.3) and r["rel_error"] == pytest.approx(0.25)
    assert "off by 0.3, 25% relative" in capsys.readouterr().out
    assert reveal(q, 0)["rel_error"] is None


def test_static_fallback_shows_question_and_choices_not_the_answer():
    q = ask("04.side", "Which side?", choices=["left", "right"])
    bundle = q.widget._repr_mimebundle_()
    assert WIDGET in bundle and "Which side?" in bundle["text/html"]
    assert "<li>left</li>" in bundle["text/html"] and "<li>right</li>" in bundle["text/html"]
    assert not bundle["text/plain"].startswith("VBox")
    q.commit("left")
    assert "left (" not in q.widget._repr_mimebundle_()["text/html"]


def test_reveal_folds_the_answer_in_details(monkeypatch):
    shown = []
    monkeypatch.setattr("labkit.predict._display", lambda obj: shown.append(getattr(obj, "data", None)))
    q = ask("01.t", "Which?", choices=["hotter", "colder"])
    reveal(q, "colder")
    shown = [h for h in shown if isinstance(h, str)]
    assert shown[0].startswith("<details") and "colder" in shown[0]


@pytest.mark.parametrize("kwargs,match", [
    (dict(choices=["a"]), "distinct"),
    (dict(choices="ab"), "must be a list"),
    (dict(number=(1, 0, 0.1)), "lo < hi"),
    (dict(number=(0, 1, 0)), "step"),
    (dict(number=(0, 1, float("nan"))), "NaN"),
    (dict(choices=["a", "b"], number=(0, 1, 0.1)), "exactly one"),
    (dict(), "exactly one"),
])
def test_ask_refuses_bad_questions(kwargs, match):
    with pytest.raises(ContractError, match=match):
        ask("01.bad", "?", **kwargs)


def test_ask_refuses_bad_id():
    with pytest.raises(ContractError, match="without spaces"):
        ask("01 bad", "?", choices=["a", "b"])


def test_reveal_refuses_measured_outside_choices_and_non_numbers():
    q = ask("01.c", "?", choices=["a", "b"])
    with pytest.raises(ContractError, match="not one of the choices"):
        reveal(q, "c")
    with pytest.raises(ContractError, match="not one of the choices"):
        q.commit("z")
    n = ask("01.n", "?", number=(0, 1, 0.1))
    with pytest.raises(ContractError, match="must be a number"):
        reveal(n, "0.5")
    with pytest.raises(ContractError, match="Question returned by ask"):
        reveal("01.n", 0.5)
