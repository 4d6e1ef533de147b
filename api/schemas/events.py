from __future__ import annotations

import marshmallow as ma

from ..streams import Cursor
from .storable import Schema


class EventCursor(ma.fields.String):
    """The ``id`` of an event of these streams (opaque to clients), loaded as a Cursor."""

    def _deserialize(self, value, attr, data, **kwargs) -> Cursor:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return Cursor.decode(text)
        except ValueError:
            raise ma.ValidationError("Not an event id of this stream.") from None


class StreamArgsSchema(Schema):
    tokens = ma.fields.Boolean(
        load_default=False,
        metadata={
            "description": "Also send the replies' text as the models write it (`delta` "
            "events, not committed: the `message` events stay the authority)."
        },
    )
    last_event_id = EventCursor(
        metadata={
            "description": "Resume after this event (for clients that cannot set the "
            "Last-Event-ID header; the header wins)."
        }
    )


class StreamHeadersSchema(Schema):
    class Meta:
        unknown = ma.EXCLUDE

    last_event_id = EventCursor(
        data_key="Last-Event-ID",
        metadata={"description": "Resume after this event: what follows it is sent, once."},
    )
