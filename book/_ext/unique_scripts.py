"""Sphinx extension: write each script tag of a page once.

Sphinx 7.4 registers a script that has only a body twice, once with the file
name None and once with "", so sphinx-thebe's `const THEBE_JS_URL` is
declared twice and the browser reports a SyntaxError on every page. Jupyter
Book 1.x pins Sphinx 7, where this is not fixed.
"""


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
