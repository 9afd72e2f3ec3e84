"""The Human/Assistant transcript parser shared by hh-rlhf and DSP, in every style of ``STYLES``."""

from __future__ import annotations

import pytest

from gazerm.data.errors import DataError
from gazerm.data.loaders.transcripts import parse_candidates, parse_transcript

DIALOGUE = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Fine, thanks."
# DSP's template (QUERY_PROMPT in its reward_datasets.py), as in its webgpt and gpt4llm files
HEADINGS = (
    "## Human:\nHi there\n\n## Assistant:\nHello!\n\n## Human:\nHow are you?\n\n## Assistant:\nFine, thanks."
)


@pytest.mark.parametrize("dialogue", [DIALOGUE, HEADINGS], ids=["anthropic", "heading"])
def test_splits_context_prompt_and_reply(dialogue):
    parsed = parse_transcript(dialogue, "f.jsonl", 3, "chosen")
    assert parsed.context == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert (parsed.prompt, parsed.reply) == ("How are you?", "Fine, thanks.")


def test_a_heading_turn_keeps_its_blank_lines_and_lower_headings():
    question = "Rewrite it.\n\n### Input:\nThe cat sat.\n\n\n"
    parsed = parse_transcript(f"## Human:\n{question}\n## Assistant:\n A cat sat.", "f", 1, "text[0]")
    assert (parsed.context, parsed.prompt, parsed.reply) == (
        [],
        "Rewrite it.\n\n### Input:\nThe cat sat.",
        "A cat sat.",
    )


@pytest.mark.parametrize(
    ("transcript", "reply"),
    [
        ("## Human:\nQuote it.\n\n## Assistant:\nHe said:\n\nHuman: hi", "He said:\n\nHuman: hi"),
        ("\n\nHuman: Quote it.\n\nAssistant: Title:\n## Human: rights", "Title:\n## Human: rights"),
    ],
    ids=["heading", "anthropic"],
)
def test_the_first_marker_decides_the_style_so_quoted_markers_stay_text(transcript, reply):
    assert parse_transcript(transcript, "f", 1, "text[0]").reply == reply


def test_reply_keeps_every_assistant_turn_after_the_last_human_turn():
    parsed = parse_transcript("Human: Cost?\n\nAssistant: Umm.\n\nAssistant: About $50.", "f", 1, "text[0]")
    assert (parsed.context, parsed.prompt, parsed.reply) == ([], "Cost?", "Umm.\n\nAssistant: About $50.")


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ("just some text", "no speaker turns of a known style: expected '\\n\\nHuman: …"),
        ("Human Hi\nAssistant Hello", "or '## Human:\\n…\\n\\n## Assistant:\\n…' (heading)"),
        ("preamble\n\nHuman: Hi\n\nAssistant: Hello", "text before the first turn"),
        ("preamble\n## Human:\nHi\n## Assistant:\nHello", "text before the first turn"),
        ("\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye", "does not end with"),
        ("\n\nAssistant: Hello", "does not end with a 'Human:' turn followed by an 'Assistant:' reply"),
        ("## Assistant:\nHello", "does not end with a '## Human:' turn followed by an '## Assistant:' reply"),
        ("\n\nHuman:  \n\nAssistant: Hello", "final 'Human:' turn is empty"),
        ("## Human:\n\n## Assistant:\nHello", "final '## Human:' turn is empty"),
        ("\n\nHuman: Hi\n\nAssistant: ", "final 'Assistant:' reply is empty"),
        ("## Human:\nHi\n\n## Assistant:\n", "final '## Assistant:' reply is empty"),
    ],
)
def test_malformed_transcript_names_the_field(transcript, message):
    with pytest.raises(DataError) as caught:
        parse_transcript(transcript, "f.jsonl", 7, "rejected")
    assert (caught.value.file, caught.value.row, caught.value.field) == ("f.jsonl", 7, "rejected")
    assert message in caught.value.message


def test_candidates_must_share_the_conversation():
    other = DIALOGUE.replace("Hello!", "Hey!")
    with pytest.raises(DataError) as caught:
        parse_candidates([("text[0]", DIALOGUE), ("text[1]", other)], "f.json", 2)
    assert caught.value.field == "text[1]"
    assert "differs from 'text[0]'" in caught.value.message


def test_candidates_give_their_final_replies():
    other = DIALOGUE.replace("Fine, thanks.", "Go away.")
    shared, replies = parse_candidates([("a", DIALOGUE), ("b", other)], "f", 1)
    assert (shared.prompt, replies) == ("How are you?", ["Fine, thanks.", "Go away."])
