"""Bridges to external annotation tools: Label Studio (brush RLE) and CVAT (COCO RLE).

Teams that already run one of these tools can review the engine's open tasks there: `export` writes a
round's open tasks with the engine's masks as pre-annotations, `import` turns the tool's export back into
answers through the same queue checks as the web app (`conceptengine review export|import`).
"""
