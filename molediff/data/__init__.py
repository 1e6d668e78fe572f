"""molediff.data"""
