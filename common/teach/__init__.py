"""`vgg teach`: the chapter as a static page and a notebook, generated from the installed code.

Framework-free: a backend is imported only through :func:`common.backends.get_backend`, lazily, to read its
functions' source (``inspect``) and to run its own shape inference. ``sources`` reads the code side by side,
``chapter`` gathers every number the page shows, ``page`` writes the HTML, ``notebook`` the notebook,
``command`` is the `vgg teach` command.
"""
