"""A small HTTP client for the training service, and the `trainsvc` command built on it."""

from trainsvc_client.client import ApiError, Client, ConnectError, TrainsvcError, WaitTimeout
from trainsvc_client.sse import ServerSentEvent

__all__ = ["ApiError", "Client", "ConnectError", "ServerSentEvent", "TrainsvcError", "WaitTimeout"]
