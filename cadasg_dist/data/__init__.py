"""Data layer: reading and writing tables, schema inference, reversible column transforms."""

from cadasg_dist.data.io import read_table, write_table
from cadasg_dist.data.schema import ColumnSchema, Schema, infer_schema
from cadasg_dist.data.transforms import DataTransformer, SpanInfo

__all__ = ["ColumnSchema", "DataTransformer", "Schema", "SpanInfo", "infer_schema", "read_table", "write_table"]
