"""``credence me portal``: a subject's own web page, served on loopback with their own key.

:mod:`.app` holds the pages, :mod:`.access` the login link, session and CSRF
checks, :mod:`.views` turns the registry's messages into words from the one
catalogue :mod:`.strings`, :mod:`.desk` does the subject's calls with
:class:`credence.client.subject.SubjectClient`, :mod:`.serving` runs uvicorn.
"""
