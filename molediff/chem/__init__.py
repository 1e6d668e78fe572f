"""molediff.chem"""
