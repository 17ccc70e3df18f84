"""NVTabular operators this project needs beyond the stock set."""

from __future__ import annotations

import numpy as np
import pandas as pd
from merlin.core.dispatch import DataFrameType
from merlin.dag import ColumnSelector
from nvtabular import ops


class PositionIndependentHashBucket(ops.HashBucket):
    """HashBucket whose bucket depends on the value only.

    NVTabular 23.08's HashBucket on the CPU hashes with `pd.util.hash_pandas_object`,
    whose default includes the row's index: the same zip code lands in different buckets
    at different row positions, so a feature hashed at training time differs from the
    same value hashed in a serving batch. `pd.util.hash_array` hashes values alone.
    """

    def transform(self, col_selector: ColumnSelector, df: DataFrameType) -> DataFrameType:
        if not isinstance(df, pd.DataFrame):
            return super().transform(col_selector, df)
        buckets = self.num_buckets
        for name in col_selector.names:
            count = buckets if isinstance(buckets, int) else buckets[name]
            values = df[name].to_numpy(dtype=object)
            hashed = pd.util.hash_array(values, categorize=False) % np.uint64(count)
            df[name] = hashed.astype(self.output_dtype)
        return df

    transform.__doc__ = ops.HashBucket.transform.__doc__
