"""The Flask application's request plumbing, below the API and above the services: problem
responses, request hygiene and security headers, request metrics."""
