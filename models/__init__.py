"""Models and domain rules shared by the API and the worker (which never import each other)."""

from .agents import Agent
from .base import Base, utcnow
from .files import FileChunk, UploadedFile
from .messages import Message
from .rooms import Room, RoomAgent
from .sessions import ChatSession
from .turns import Turn
from .usage import UsageRecord
from .users import ApiToken, User
from .webhook_secrets import WebhookSecret

__all__ = [
    "Agent",
    "ApiToken",
    "Base",
    "ChatSession",
    "FileChunk",
    "Message",
    "Room",
    "RoomAgent",
    "Turn",
    "UploadedFile",
    "UsageRecord",
    "User",
    "WebhookSecret",
    "utcnow",
]
