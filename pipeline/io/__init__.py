"""Dataset I/O: WebDataset shards, images, Parquet records, what a sample key may be, pairs files."""
