"""ExFuse's building blocks, each a serializable Keras layer named after its paper term."""

from exfuse_keras.layers.dap import DenselyAdjacentPrediction, DenselyAdjacentUpsampling
from exfuse_keras.layers.ecre import SubPixelUpsampling
from exfuse_keras.layers.fusion import RecurrentSemanticEmbedding
from exfuse_keras.layers.gcn import BoundaryRefinement, GlobalConvolution
from exfuse_keras.layers.grouped import GroupedConv2D
from exfuse_keras.layers.initializers import BilinearUpsamplingInitializer
from exfuse_keras.layers.normalization import SyncBatchNormalization
from exfuse_keras.layers.preprocessing import InputNormalization
from exfuse_keras.layers.resize import BilinearUpsampling, ResizeToMatch
from exfuse_keras.layers.seb import SemanticEmbeddingBranch
from exfuse_keras.layers.supervision import SemanticSupervisionHead

__all__ = [
    "BilinearUpsampling", "BilinearUpsamplingInitializer", "BoundaryRefinement",
    "DenselyAdjacentPrediction", "DenselyAdjacentUpsampling", "GlobalConvolution", "GroupedConv2D",
    "InputNormalization",
    "RecurrentSemanticEmbedding", "ResizeToMatch",
    "SemanticEmbeddingBranch", "SemanticSupervisionHead", "SubPixelUpsampling", "SyncBatchNormalization",
]
