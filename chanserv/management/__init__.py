"""
Django management commands of the chanserv app.  Main thread (the command's).
"""
