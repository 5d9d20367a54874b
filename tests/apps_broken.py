"""An application module that cannot be imported: the boot-failure tests load it."""

import this_module_does_not_exist  # noqa: F401

app = None
