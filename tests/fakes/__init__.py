"""Local fakes of store APIs, served over real HTTP for the real client libraries."""
