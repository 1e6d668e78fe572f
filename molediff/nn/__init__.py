"""molediff.nn"""
