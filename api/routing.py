"""URL converters."""

from werkzeug.routing import IntegerConverter

from models.base import MAX_ID


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` limited to the 64-bit ids the database can hold."""

    def __init__(self, map, *args, **kwargs) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)
