"""Where bases and adapters come from: local directories and Hub repos (resolve), their file sets, the Hub client,
and the one path fence every reader goes through."""
