"""Datasets: format readers (COCO, VOC, TXT, YOLO) into one record type, transforms, loaders, writers."""
