"""The shape every context must have before it goes to a model: what strict chat templates
accept (llama.cpp's, and those that require user/assistant alternation, as Mistral's or
Gemma's do).

A room's transcript breaks these rules naturally: the user's message and other agents' replies
are consecutive user messages, an agent that speaks twice in a row leaves its own replies at
the end, and history truncation can leave an assistant message or a tool result first.
:func:`conform` rewrites a context into the accepted shape.
"""

from __future__ import annotations

from .providers.base import MESSAGE_OVERHEAD_TOKENS, ChatMessage, estimate_tokens

# Put before a context whose history (cut to the window) starts with the speaker's own reply.
EARLIER = "[room] Earlier messages of this conversation are not shown."
# Put after the speaker's own reply when it is the last message: a context ending with an
# assistant message is continued as a prefill by llama.cpp (the same reply again), and two of
# them at the end are refused.
AGAIN = (
    "[room] It is your turn again: add something new to the conversation above (do not repeat"
    " your last reply), or say that you have nothing to add."
)
# The most conform() adds to a context's estimate (estimate_prompt_tokens): both framings.
FRAMING_TOKENS = 2 * MESSAGE_OVERHEAD_TOKENS + estimate_tokens(EARLIER) + estimate_tokens(AGAIN)

_SEPARATOR = "\n\n"


def conform(messages: list[ChatMessage]) -> list[ChatMessage]:
    """``messages`` in the shape strict chat templates accept; the input is not modified.

    The rules, and how they are met:

    - at most one system message, and only first: leading system messages are merged into one;
      a system message further on is kept as user text;
    - the first message after the system one is a user message: when the history starts with
      an assistant message, a short user message (EARLIER) is put before it; tool results
      left first (their call cut off) are dropped;
    - user and assistant alternate: consecutive user messages are merged into one, their texts
      joined by blank lines (a room's transcript: the user's message, then other agents'
      replies as ``[name]: text``); so are consecutive assistant messages (the speaker's own
      replies), a plain one merging into a tool-calling one that follows it;
    - an assistant message with ``tool_calls`` is followed at once by one tool message for each
      call (matching ``tool_call_id``), and by nothing else in between: calls without a result
      are taken out of the message (which is dropped if nothing is left of it), and tool results
      that answer no call right before them, or a call answered already, are dropped;
    - it never ends with an assistant message: after the speaker's own reply a short user
      message (AGAIN) asks for something new, so the model neither continues nor repeats it.
      It may end with a user message or a tool result.

    One pass; messages that need no change are passed through, and merging makes fewer, so
    the estimate (estimate_prompt_tokens) grows by at most FRAMING_TOKENS. A context with
    nothing after the system message is returned as it is.
    """
    out: list[ChatMessage] = []
    n = len(messages)
    i = 0
    if n and messages[0].role == "system":
        i = 1
        while i < n and messages[i].role == "system":
            i += 1
        out.append(messages[0] if i == 1 else _joined(messages[:i], "system"))
    body_start = len(out)
    run: list[ChatMessage] = []  # consecutive messages of one role, merged when it closes
    run_role = ""
    while i < n:
        message = messages[i]
        i += 1
        role = message.role
        if role == "tool":
            continue  # a result whose call is not right before it
        if role == "assistant" and message.tool_calls:
            # The call's unit: the results right after it, each answering one of its calls.
            start = i
            while i < n and messages[i].role == "tool":
                i += 1
            call_ids = {call.id for call in message.tool_calls}
            results: list[ChatMessage] = []
            for result in messages[start:i]:
                if result.tool_call_id in call_ids:
                    call_ids.discard(result.tool_call_id)  # a second answer to it goes
                    results.append(result)
            if results:
                answered = {result.tool_call_id for result in results}
                calls = []
                for call in message.tool_calls:  # answered ones, each id once
                    if call.id in answered:
                        answered.discard(call.id)
                        calls.append(call)
                texts = [m.content for m in run if m.content] if run_role == "assistant" else []
                if len(calls) < len(message.tool_calls) or texts:
                    if message.content:
                        texts.append(message.content)
                    message = ChatMessage(
                        role="assistant",
                        content=_SEPARATOR.join(texts),
                        name=message.name,
                        tool_calls=calls,
                    )
                if run_role != "assistant":
                    _close(out, run, run_role)
                run = []
                out.append(message)
                out.extend(results)
                run_role = "tool"
                continue
            if not message.content:
                continue  # nothing of it can be sent
            message = ChatMessage(role="assistant", content=message.content, name=message.name)
        elif role != "assistant":
            role = "user"  # a system message past the first: kept as text
        if role == run_role:
            run.append(message)
        else:
            if run:
                _close(out, run, run_role)
            run = [message]
            run_role = role
    _close(out, run, run_role)
    if len(out) > body_start:
        if out[body_start].role != "user":
            out.insert(body_start, ChatMessage(role="user", content=EARLIER))
        if out[-1].role == "assistant":
            out.append(ChatMessage(role="user", content=AGAIN))
    return out


def _close(out: list[ChatMessage], run: list[ChatMessage], role: str) -> None:
    """Put the run (consecutive messages of one role) into ``out`` as one message."""
    if len(run) == 1 and run[0].role == role:
        out.append(run[0])
    elif run:
        out.append(_joined(run, role))


def _joined(run: list[ChatMessage], role: str) -> ChatMessage:
    """One message of ``role`` from several (one speaker's, when they are assistant ones)."""
    name = run[0].name if role == "assistant" else None
    return ChatMessage(role, _SEPARATOR.join([m.content for m in run if m.content]), name)
