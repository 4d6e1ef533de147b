"""The providers and models an agent (or a room's selector) may name."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from ..schemas.providers import ProviderListSchema
from ..state import state

blp = Blueprint(
    "providers",
    __name__,
    url_prefix="/api/v1/providers",
    description="The server's LLM providers and their models.",
)


@blp.route("")
class Providers(MethodView):
    @blp.response(200, ProviderListSchema)
    def get(self):
        """List the providers an agent may use, with their models (the server's configuration)"""
        settings = state().settings
        return {
            "data": [
                {
                    "name": name,
                    "type": config.type,
                    "default_model": config.default_model,
                    "models": list(config.models),
                    "tool_calling": config.tool_calling,
                    "default": name == settings.default_provider,
                }
                for name, config in sorted(settings.providers().items())
            ]
        }
