"""telenet: the hub of a five-tier telemedicine coordination network (远程医疗协作网)."""

__version__ = "0.1.0"
