"""HAM10000 diagnosis classes, in the source paper's label order (Table 2)."""

CLASSES: tuple[str, ...] = ("bkl", "nv", "df", "mel", "vasc", "bcc", "akiec")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
