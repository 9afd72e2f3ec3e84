"""The Human/Assistant transcript parser shared by hh-rlhf and DSP."""

from __future__ import annotations

import pytest

from gazerm.data.errors import DataError
from gazerm.data.loaders.transcripts import parse_candidates, parse_transcript

DIALOGUE = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Fine, thanks."


def test_splits_context_prompt_and_reply():
    parsed = parse_transcript(DIALOGUE, "f.jsonl", 3, "chosen")
    assert parsed.context == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert (parsed.prompt, parsed.reply) == ("How are you?", "Fine, thanks.")


def test_reply_keeps_every_assistant_turn_after_the_last_human_turn():
    parsed = parse_transcript("Human: Cost?\n\nAssistant: Umm.\n\nAssistant: About $50.", "f", 1, "text[0]")
    assert (parsed.context, parsed.prompt, parsed.reply) == ([], "Cost?", "Umm.\n\nAssistant: About $50.")


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ("just some text", "no 'Human:'/'Assistant:' turns"),
        ("preamble\n\nHuman: Hi\n\nAssistant: Hello", "text before the first turn"),
        ("\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye", "does not end with"),
        ("\n\nAssistant: Hello", "does not end with"),
        ("\n\nHuman:  \n\nAssistant: Hello", "final 'Human:' turn is empty"),
        ("\n\nHuman: Hi\n\nAssistant: ", "final 'Assistant:' reply is empty"),
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
