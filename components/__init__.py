"""duogen.components"""
