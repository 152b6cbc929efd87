"""The MongoDB adapters (pymongo): backup and restore as raw BSON, mongodump format, JSON/CSV export and import."""
