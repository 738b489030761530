"""Reading finished runs into tables. Reads Parquet only, never a model."""
