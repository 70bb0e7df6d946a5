"""One adapter per sales channel; each can `normalise` store data, `fetch` truth and `cancel`."""
