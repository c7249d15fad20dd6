evaluate = None
