"""Client library and CLI for the `recommender` ensemble over gRPC and HTTP."""

from client.recommender_client import (
    InvalidRequestError,
    Recommendation,
    RecommendationRequest,
    RecommenderClient,
    RecommenderClientError,
    RequestTimeoutError,
    ServerFailedError,
    ServerUnavailableError,
)

__all__ = [
    "InvalidRequestError",
    "Recommendation",
    "RecommendationRequest",
    "RecommenderClient",
    "RecommenderClientError",
    "RequestTimeoutError",
    "ServerFailedError",
    "ServerUnavailableError",
]
