"""``python -m fastns <task> ...``: the ``fastns`` command without its installed script."""

from .commands import main

main()
