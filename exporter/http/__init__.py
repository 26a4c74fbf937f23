"""The HTTP side: listeners, the HTTP/1.1 protocol, the routes and status page, the server's lifecycle."""
