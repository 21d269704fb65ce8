"""HTTP filters (the seam later stages extend). Importing this registers the built-in filters."""

from minimesh.proxy.filters import fault  # noqa: F401
from minimesh.proxy.filters.base import ConnectionInfo, FilterEnv, HttpFilter, LocalReply, RequestContext
from minimesh.proxy.filters.registry import HttpFilterType, register

__all__ = ["ConnectionInfo", "FilterEnv", "HttpFilter", "HttpFilterType", "LocalReply", "RequestContext", "register"]
