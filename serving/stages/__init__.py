"""The four serving stages as plain numpy-in/numpy-out operators, one module each.

Each stage loads its artefacts from one model version directory and works on a whole
batch at once. The Triton Python models (serving/triton_models/) are thin wrappers that
gather tensors from all requests, call a stage once, and split the result; the in-process
chain (serving/stages/chain.py) runs the same stages without a server, which is what the
parity tests and the in-process baseline compare against.
"""

from serving.stages.ranking import RankingStage
from serving.stages.reorder import Recommendation, ReorderStage
from serving.stages.retrieval import RetrievalStage
from serving.stages.user_features import RawColumns, UserFeatureStage

__all__ = [
    "RankingStage",
    "RawColumns",
    "Recommendation",
    "ReorderStage",
    "RetrievalStage",
    "UserFeatureStage",
]
