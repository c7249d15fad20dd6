ConditionSpace = None
