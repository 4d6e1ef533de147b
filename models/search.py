MAX_RESULTS = 20
def search(db, *, user_id, session_id, query, limit=5, before_message_id=None):
    return []
