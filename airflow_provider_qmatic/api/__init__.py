"""What goes over the wire, as plain data: the contract table (with the OAuth2 scopes) and the
pydantic models of requests and answers. Imports nothing of the provider but its exceptions."""
