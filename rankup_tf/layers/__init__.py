"""RankUp / RankMixer Keras layers, usable in any Keras 2 or Keras 3 model.

They use the Keras `tf.keras` is (`rankup_tf.keras_compat`); `MultiEmbedding`
is Keras 2 only.
"""

from rankup_tf.layers.backbone import PerTokenFFN
from rankup_tf.layers.backbone import RankMixerBlock
from rankup_tf.layers.backbone import RankUpBlock
from rankup_tf.layers.backbone import SparseMoEFFN
from rankup_tf.layers.backbone import TokenMixing
from rankup_tf.layers.embedding import MultiEmbedding
from rankup_tf.layers.heads import TaskTowers
from rankup_tf.layers.tokenizers import CrossedPretrainedToken
from rankup_tf.layers.tokenizers import DenseToken
from rankup_tf.layers.tokenizers import GlobalToken
from rankup_tf.layers.tokenizers import OrderedSplit
from rankup_tf.layers.tokenizers import RandomPermutationSplit
from rankup_tf.layers.tokenizers import SemanticGroupSplit
from rankup_tf.layers.tokenizers import TaskTokens

__all__ = [
    "MultiEmbedding", "RandomPermutationSplit", "SemanticGroupSplit",
    "OrderedSplit", "GlobalToken", "CrossedPretrainedToken", "DenseToken",
    "TaskTokens", "TokenMixing", "PerTokenFFN", "SparseMoEFFN",
    "RankMixerBlock", "RankUpBlock", "TaskTowers",
]
