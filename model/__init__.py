"""duogen.model"""
