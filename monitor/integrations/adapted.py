"""What an adapter made of one request body: events for the shared ingest path, and what it set aside.

An adapter converts each item (a LiteLLM log, an OTLP span) into an :class:`EventIn`, or says why not:
an :class:`ItemError` (or a pydantic ``ValidationError``) rejects the item with a message naming the
field; :attr:`Skip.REDACTED` and :attr:`Skip.IGNORED` set it aside to be counted. The result becomes
the same :class:`~monitor.ingest.parsing.ParsedBody` that ``POST /v1/events`` hands to the service.

>>> def convert(item):
...     if item is None:
...         return Skip.IGNORED
...     if "prompt" not in item:
...         raise ItemError("prompt: missing")
...     return EventIn(prompt=item["prompt"])
>>> out = adapt(enumerate([{"prompt": "hi"}, None, {}]), convert)
>>> len(out.events), out.ignored, out.rejected
(1, 1, [Rejection(index=2, error='prompt: missing')])
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from monitor.ingest.parsing import ParsedBody, Rejection, describe_validation_error
from monitor.ingest.schema import EventIn


class ItemError(ValueError):
    """One item cannot become an event; the message starts with the field it is about."""


class Skip(enum.Enum):
    REDACTED = "redacted"  # an LLM call whose texts the sender withheld: counted, never judged
    IGNORED = "ignored"  # not an LLM call at all (a non-LLM span, an embedding call)


@dataclass(slots=True)
class Adapted:
    events: list[tuple[int, EventIn]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    redacted: int = 0
    ignored: int = 0
    single: bool = False  # the body was one item: an invalid one is answered 422, not 202

    def parsed_body(self) -> ParsedBody:
        return ParsedBody(events=self.events, rejected=self.rejected, single=self.single)


def adapt(items: Iterable[tuple[int, Any]], convert: Callable[[Any], EventIn | Skip], single: bool = False) -> Adapted:
    """Convert every ``(index, item)``; one bad item never sinks the others.

    An item that is already an :class:`ItemError` (an unparsable NDJSON line) is rejected as it is.
    """
    out = Adapted(single=single)
    for index, item in items:
        try:
            if isinstance(item, ItemError):
                raise item
            result = convert(item)
        except ItemError as exc:
            out.rejected.append(Rejection(index, str(exc)))
            continue
        except ValidationError as exc:
            out.rejected.append(Rejection(index, describe_validation_error(exc)))
            continue
        except (TypeError, AttributeError, ValueError, ArithmeticError) as exc:
            # a value of a shape or size the adapter did not expect: the item's fault, never a 500 nor the batch's loss
            out.rejected.append(Rejection(index, f"item: a field has an unexpected type or value ({str(exc)[:120]})"))
            continue
        if result is Skip.REDACTED:
            out.redacted += 1
        elif result is Skip.IGNORED:
            out.ignored += 1
        else:
            out.events.append((index, result))
    return out
