from dataclasses import dataclass
class FileNotReadable(Exception):
    def __init__(self, message): super().__init__(message); self.message = message
@dataclass(frozen=True)
class FileTextPage:
    file_id: int
    name: str
    offset: int
    text: str
    total_chars: int
    next_offset: int | None
MAX_READ_CHARS = 8000
def read_file_text(db, *, user_id, file_id=None, name=None, offset=0, length=4000):
    raise FileNotReadable("stub")
