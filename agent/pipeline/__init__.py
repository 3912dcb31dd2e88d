"""The pipeline: raw lines -> parsed logs -> processed logs -> encoded logs in batches.

Pure: nothing here does I/O or imports asyncio. The app feeds it chunks read
back from the spool and hands the closed batches to the output.
"""
